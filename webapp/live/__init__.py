"""The live view: the binary frame format, publishing frames to a job's viewers, the status frame, the websocket."""
