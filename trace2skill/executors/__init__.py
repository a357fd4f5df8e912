"""Where the map stage (read, redact, analyse each trajectory) runs: alternatives, one module each."""
