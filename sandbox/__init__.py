"""Running untrusted candidate losses: the policy compile, the unit-check suite and isolated backends."""
