"""Experiment presets: ``get_config(arg)`` functions returning ``ml_collections.ConfigDict``s."""
