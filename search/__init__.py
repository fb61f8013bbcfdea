"""The experiment: config schema, Tuner assembly and the command line."""
