"""The Together AI provider: its HTTP client and error mapping (the protocol it speaks is in
`orchestrator.protocol`, shared with the local API)."""
