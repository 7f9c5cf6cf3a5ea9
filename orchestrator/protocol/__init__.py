"""The Together API's protocol: the objects it returns, the training data it accepts, the
fine-tune parameters that go together.

Both sides of the wire read it: the client (`providers.together`) and the local API that
imitates the service (`localapi`), so the two can never disagree about a rule. It imports
nothing of the orchestrator's above the bottom layer.
"""
