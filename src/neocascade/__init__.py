"""neocascade: two-stage CNN cascade for asteroids in difference images."""

__version__ = "0.1.0"
