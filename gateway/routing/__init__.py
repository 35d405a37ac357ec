"""Where a request goes: the rules file (load, validate, watch), conditions, the planner, breakers."""
