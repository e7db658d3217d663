"""python -m eas.lm_eval ARGS: lm_eval's command line with the `eas` model registered (see eas.lm_eval)."""

from eas.lm_eval import main

if __name__ == "__main__":
    main()
