"""Webhook signature schemes (Stripe, Standard Webhooks, the identity provider's body HMAC): pure functions."""
