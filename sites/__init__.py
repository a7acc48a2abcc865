"""Site catalogue and compute back-ends."""

from .catalogue import SiteCatalogue, SiteConfig, load_catalogue, parse_catalogue

__all__ = ["SiteCatalogue", "SiteConfig", "load_catalogue", "parse_catalogue"]
