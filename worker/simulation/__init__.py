"""A discrete-event simulator in virtual time that runs the planner and simple
baseline policies on the same seeded workloads, and measures them against lower
bounds (SCHEDULING.md section 4). Nothing here reads the wall clock except the
planning-cost benchmark, which measures the planner's own CPU time."""
