//! Speech recognition: Whisper (whisper.cpp via whisper-rs) on worker threads. Issue 4.
