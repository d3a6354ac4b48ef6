"""Who may do what: sign-in by session or API token (`auth`), and what a user may capture
(`grants`)."""
