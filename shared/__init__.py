"""orderpipe's shared package: configuration, data layer, jobs, gateways and business flows."""

__version__ = "0.1.0"
