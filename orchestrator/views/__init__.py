"""What the command line and the web view show of the store: read models, nothing that executes.

- `shapes`: the JSON shapes of runs, steps, batches, models, schedules, events and metrics
  (`-o json`, the web view's API);
- `batches`: a batch with each cell's model and final losses;
- `schedules`: the schedules, each with its next fire time and recent runs;
- `order`: a stored run's steps in its pipeline's order;
- `charts`: loss curves, as SVG (and PNG with the plot extra).

Nothing here imports the engine, a provider or the local API (`tests/test_views.py`): reading
what happened never loads what makes it happen.
"""
