"""Sub-commands of the `hf-plasticity` command line, one module each (each exposes `register(subparsers)`)."""
