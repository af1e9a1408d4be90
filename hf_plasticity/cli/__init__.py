"""The `hf-plasticity` command line; `main` builds the parser, each sub-command lives in a module of its own."""
