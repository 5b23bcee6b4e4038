"""Status documents of our custom resources, built from what happened (pure: no I/O, time
passed in). Phases and outcomes come from `api.enums`, failure reasons from `failures`."""
