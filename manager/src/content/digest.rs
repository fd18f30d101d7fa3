//! Digests: only sha256 (`sha256:<64 lowercase hex>`) is accepted.

use anyhow::{bail, Result};
use sha2::{Digest as _, Sha256};

/// Checks a digest and returns its hex part.
pub fn check_digest(d: &str) -> Result<&str> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        bail!("unsupported digest {d:?}: only sha256 is supported");
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        bail!("invalid digest {d:?}");
    }
    Ok(hex)
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A reader that hashes what passes through it.
pub struct HashReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub count: u64,
}

impl<R> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: std::io::Read> std::io::Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn digests() {
        assert!(check_digest("sha256:abc").is_err());
        assert!(check_digest("md5:00").is_err());
        let d = sha256_digest(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(check_digest(&d).unwrap().len(), 64);
    }
}
