"""Development tools: managed test/load-test servers and the local Triton launcher.

Not part of the shipped runtime: the Bento bundles ``/essayscore/**/*.py`` only (bentofile.yaml), so nothing here
reaches a deployment. ``essayscore triton ...`` delegates to :mod:`devtools.triton_launcher` in a development
checkout.
"""
