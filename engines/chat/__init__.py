"""Chat engines: llama.cpp in process, or any OpenAI-compatible server."""
