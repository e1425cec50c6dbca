//! A deterministic, seeded corpus of files for the soak test and the
//! benchmarks: about one file per 512 KiB of the requested size, in nested
//! directories, of varied sizes, 40 % of the bytes incompressible.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// A small, fast, seeded generator (xorshift64*); not for secrets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Parses sizes such as `200MiB`, `1GiB`, `50MB` or `4096`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("size `{s}`: expected a number and a unit such as 200MiB"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => bail!("size `{s}`: unknown unit `{u}` (use KiB, MiB or GiB)"),
    };
    n.checked_mul(mul).with_context(|| format!("size `{s}` is too large"))
}

/// Writes the corpus into `dir` (made empty first) and returns (files, bytes).
pub fn generate(dir: &Path, total: u64, seed: u64) -> Result<(u64, u64)> {
    generate_with(dir, total, seed, 40)
}

/// As [`generate`], with `incompressible` percent of the files random.
pub fn generate_with(dir: &Path, total: u64, seed: u64, incompressible: u64) -> Result<(u64, u64)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let mut rng = Rng::new(seed);
    let files = (total / (512 << 10)).max(1);
    // Sizes: log-uniform weights, scaled to add up to `total`.
    let weights: Vec<f64> = (0..files).map(|_| (2f64).powf((rng.below(1000) as f64) / 1000.0 * 12.0)).collect();
    let sum: f64 = weights.iter().sum();
    let mut written = 0u64;
    let words: &[&[u8]] =
        &[b"agent ", b"session ", b"tailnet ", b"restore ", b"state ", b"nxs ", b"survival ", b"key\n"];
    let mut buf = Vec::with_capacity(1 << 20);
    for (i, w) in weights.iter().enumerate() {
        let size = if i as u64 == files - 1 { total - written } else { ((w / sum) * total as f64) as u64 };
        let sub = dir.join(format!("d{:02}", i % 37)).join(format!("e{}", i % 5));
        std::fs::create_dir_all(&sub)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(sub.join(format!("f{i:05}.dat")))?);
        let random = rng.below(100) < incompressible;
        let mut left = size;
        while left > 0 {
            buf.clear();
            let n = left.min(1 << 20) as usize;
            while buf.len() < n {
                if random {
                    buf.extend_from_slice(&rng.next_u64().to_le_bytes());
                } else {
                    buf.extend_from_slice(words[rng.below(words.len() as u64) as usize]);
                }
            }
            buf.truncate(n);
            f.write_all(&buf)?;
            left -= n as u64;
        }
        f.flush()?;
        written += size;
    }
    Ok((files, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("200MiB").unwrap(), 200 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("50MB").unwrap(), 50_000_000);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5PB").is_err());
    }

    #[test]
    fn corpus_is_deterministic_and_sized() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (n, bytes) = generate(&a.path().join("c"), 3 << 20, 7).unwrap();
        generate(&b.path().join("c"), 3 << 20, 7).unwrap();
        assert_eq!(bytes, 3 << 20);
        assert_eq!(n, 6);
        let list = |d: &Path| {
            let mut v: Vec<(String, Vec<u8>)> = walk(d)
                .into_iter()
                .map(|p| (p.strip_prefix(d).unwrap().display().to_string(), std::fs::read(&p).unwrap()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(list(&a.path().join("c")), list(&b.path().join("c")));
    }

    fn walk(d: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
