//! Third-party decoders (tokenizers, Arrow IPC, Parquet) that panic on some malformed
//! files instead of returning an error. A file from a download must give an error, never
//! abort the command, so every call into such a decoder goes through [`contained`].

/// Runs `f`; a panic inside it comes back as `Err` with the panic's message.
pub fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("malformed file")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::contained;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(contained(|| 3), Ok(3));
        let r: Result<(), String> = contained(|| panic!("slice {} out of range", 9));
        assert_eq!(r, Err("slice 9 out of range".to_string()));
    }
}
