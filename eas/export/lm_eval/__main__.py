"""python -m eas.export.lm_eval ARGS: lm_eval's command line with the `eas` model registered
(see eas.export.lm_eval)."""

from eas.export.lm_eval import main

if __name__ == "__main__":
    main()
