"""Data shipped with soc: Sigma rules, the classification policy, compliance baselines and sample data."""
