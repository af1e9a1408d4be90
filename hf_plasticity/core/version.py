"""The library's version, in a module of its own so that every layer can read it without importing the package."""

__version__ = "0.2.0"
#: The key of the version stamp in a saved config (``PlasticityConfig.to_dict()``).
VERSION_KEY = "hf_plasticity_version"
