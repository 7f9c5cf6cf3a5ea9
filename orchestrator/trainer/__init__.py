"""The local trainer: real LoRA fine-tuning behind the local API, with peft.

A local API started with `--trainer peft` (setting `local_trainer`) queues each fine-tuning job
it accepts (`store`) for a trainer process of its own (`client` starts it; `worker` is it),
which imports torch once and trains one job at a time on CUDA when there is one, else the CPU
(`loop`), on a built-in tiny base or a model folder the user maps (`bases`), from Together's
dataset formats (`data`), and answers completions with base and adapter (`generate`).

The server side (`client`, `store`, `spec`) imports no torch: the engine, the CLI and the
server never load it; it needs the `train` extra (`pip install 'orchestrator[train]'`).
"""
