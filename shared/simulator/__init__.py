"""The gateway simulator: eSewa, Khalti and Stripe on their real paths, for tests and `orderpipe dev`."""
