"""Composition root: settings, the app factory, the command line. The only place that reads the environment."""
