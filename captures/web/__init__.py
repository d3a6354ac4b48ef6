"""The web: pages, the JSON API, the diagram API and the live WebSocket. Thin: they check who
asks, call actions or read what the jobs stored, and answer; nothing here changes state itself."""
