"""The gateway appliance: config model, CLI, core service and its store."""
