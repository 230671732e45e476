"""The package's version, in a leaf module: ``ww_callbacks.__version__``, the report and the
command line read it here (the package ``__init__`` and the report used to import each other for
it)."""

__version__ = "0.1.0"
