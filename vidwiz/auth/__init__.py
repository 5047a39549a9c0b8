"""Users, passwords, JWT, long-term tokens, Google login and viewer resolution."""
