//! Token integer width on disk: u16 when the vocabulary fits (half the bytes), else u32;
//! always little-endian so any language can read the arrays.

use serde::{Deserialize, Serialize};

use crate::config::DtypeChoice;
use crate::error::{DataError, Result};

/// Width of stored token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// Little-endian u16 (numpy `<u2`).
    U16,
    /// Little-endian u32 (numpy `<u4`).
    U32,
}

impl TokenDtype {
    /// Picks the width for a vocabulary, rejecting one that does not fit the requested width.
    pub fn for_vocab(choice: DtypeChoice, vocab_size: usize) -> Result<Self> {
        match choice {
            DtypeChoice::U16 if vocab_size > 1 << 16 => Err(DataError::Config(format!(
                "the tokenizer has {vocab_size} ids, more than token_dtype u16 holds (65536)"
            ))),
            DtypeChoice::U16 => Ok(Self::U16),
            DtypeChoice::U32 => Ok(Self::U32),
            DtypeChoice::Auto if vocab_size <= 1 << 16 => Ok(Self::U16),
            DtypeChoice::Auto => Ok(Self::U32),
        }
    }

    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }

    /// Appends `ids` as little-endian bytes.
    pub fn encode(self, ids: &[u32], out: &mut Vec<u8>) {
        out.reserve(ids.len() * self.width());
        match self {
            Self::U16 => ids
                .iter()
                .for_each(|&t| out.extend_from_slice(&(t as u16).to_le_bytes())),
            Self::U32 => ids
                .iter()
                .for_each(|&t| out.extend_from_slice(&t.to_le_bytes())),
        }
    }

    /// Appends the ids stored in `bytes`.
    pub fn decode(self, bytes: &[u8], out: &mut Vec<u32>) {
        match self {
            Self::U16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            Self::U32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
    }
}
