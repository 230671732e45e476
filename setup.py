"""Package discovery that setup.cfg cannot express: the framework-free core ``ww_callbacks`` and
the top-level ``integrations/`` folder, installed as ``ww_callbacks.integrations``, each with
every subpackage found on disk (a listed ``packages =`` once left ``ww_callbacks.policies`` out
of the wheel). Everything else is in setup.cfg."""

from setuptools import find_packages, setup

CORE = find_packages(include=["ww_callbacks", "ww_callbacks.*"])
INTEGRATIONS = ["ww_callbacks.integrations"] + [
    f"ww_callbacks.integrations.{name}" for name in find_packages("integrations")]

setup(packages=CORE + INTEGRATIONS,
      package_dir={"ww_callbacks.integrations": "integrations"})
