//! The compact device wire format (postcard + COBS) shared by firmware and the gateway.
