"""Speech engines: faster-whisper in process, or any /v1/audio/transcriptions server; live captions, speakers, subtitles, recordings."""
