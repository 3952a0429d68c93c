"""The Gradio demo's parts: models and their cards, the request service, video tracks, pictures, files."""
