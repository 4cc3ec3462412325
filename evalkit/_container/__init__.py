"""Code that runs *inside* the sandbox, copied in as files (never imported on the host)."""
