"""Packaged configs: `base.get_config()` holds every field, documented once, with the default
experiment's values; each experiment in experiments/ starts from it and overrides what differs."""
