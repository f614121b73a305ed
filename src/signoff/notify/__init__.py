"""Notifications: an outbox written with every change, delivered by a worker with retries."""
