"""Meta-policy optimisation: returns and advantages, the inner VPG step, the outer TRPO/PPO step."""
