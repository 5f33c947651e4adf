"""Pictures of a model and a run: attention maps (attention_maps, drawing) and run reports
(run_report). The command line is `python -m vivit_jax.tools.visualize`."""
