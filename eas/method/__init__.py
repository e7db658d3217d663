"""Layer 3, the method (EAS itself): skipping MHAs/FFNs/layers (skip), the Propagation-of-Information
Adapter (pia: config / context / layer / model), merging PIAs into the FFN after prefill (reparam),
the k-armed bandit redundancy search (bandit), the other ways of choosing what to skip (selectors), and
the training-free removal probe (probe)."""
