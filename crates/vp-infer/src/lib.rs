//! ONNX Runtime session wrapper: loads the ONNX Runtime library named by `ORT_DYLIB_PATH` (with one clear error
//! when it is missing), checks a model against the family's I/O contract (uint8 `image` in, float32 `probs` out)
//! and runs batches of images to probability rows.

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use thiserror::Error;

/// Errors from loading ONNX Runtime or running a model.
#[derive(Debug, Error)]
pub enum InferError {
    #[error(
        "ONNX Runtime library not found: {0}. Run scripts/setup.sh (it installs the pinned onnxruntime wheel), \
         then `. scripts/env.sh`, or set ORT_DYLIB_PATH to the full path of libonnxruntime.so"
    )]
    LibraryMissing(String),
    #[error("ONNX Runtime could not be initialised from {path}: {message}")]
    Init { path: PathBuf, message: String },
    #[error("model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("model {path} does not follow the family I/O contract: {message}")]
    Contract { path: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("batch has {got} bytes, expected {n} samples of {sample} bytes")]
    BatchSize { got: usize, n: usize, sample: usize },
}

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library from `ORT_DYLIB_PATH` on first use.
fn environment() -> Result<&'static ort::environment::Environment, InferError> {
    let path = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            return Err(InferError::LibraryMissing(
                "ORT_DYLIB_PATH is not set".into(),
            ));
        }
    };
    if !path.is_file() {
        return Err(InferError::LibraryMissing(format!(
            "ORT_DYLIB_PATH={} does not name a file",
            path.display()
        )));
    }
    let env = ENV.get_or_init(|| {
        ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("vp").build().map_err(|e| e.to_string()))
    });
    env.as_ref().map_err(|message| InferError::Init {
        path: path.clone(),
        message: message.clone(),
    })
}

/// Checks that ONNX Runtime can be loaded (for a fast, clear failure at start-up).
pub fn check_runtime() -> Result<(), InferError> {
    environment().map(|_| ())
}

/// One loaded model of a family: input `[N, C, H, W]` uint8, output `[N, classes]` float32.
pub struct Model {
    session: Session,
    input_name: String,
    output_name: String,
    chw: [usize; 3],
    classes: usize,
}

impl Model {
    /// Loads the ONNX file at `path` with `threads` intra-op threads and checks its inputs and outputs against
    /// the contract (`input_name` uint8 of shape `[N, chw]`, `output_name` float32 `[N, classes]`).
    pub fn load(
        path: &Path,
        threads: usize,
        input_name: &str,
        chw: [usize; 3],
        output_name: &str,
        classes: usize,
    ) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|e| InferError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_bytes(path, &bytes, threads, input_name, chw, output_name, classes)
    }

    /// Loads a model from bytes already in memory (e.g. the exact bytes whose checksum was just verified, so
    /// the file cannot be swapped between the check and the load); `origin` names it in messages.
    pub fn from_bytes(
        origin: &Path,
        bytes: &[u8],
        threads: usize,
        input_name: &str,
        chw: [usize; 3],
        output_name: &str,
        classes: usize,
    ) -> Result<Self, InferError> {
        let path = origin;
        let env = environment()?;
        let load = |message: String| InferError::Load {
            path: path.to_path_buf(),
            message,
        };
        let session = Session::builder(env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| load(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load(e.to_string()))?
            .commit_from_memory(bytes)
            .map_err(|e| load(e.to_string()))?;
        let contract = |message: String| InferError::Contract {
            path: path.to_path_buf(),
            message,
        };
        let [input] = session.inputs() else {
            return Err(contract(format!(
                "expected 1 input, found {}",
                session.inputs().len()
            )));
        };
        let [output] = session.outputs() else {
            return Err(contract(format!(
                "expected 1 output, found {}",
                session.outputs().len()
            )));
        };
        check_tensor(
            input.name(),
            input.dtype(),
            input_name,
            TensorElementType::Uint8,
            4,
        )
        .map_err(contract)?;
        check_tensor(
            output.name(),
            output.dtype(),
            output_name,
            TensorElementType::Float32,
            2,
        )
        .map_err(contract)?;
        Ok(Self {
            input_name: input.name().to_string(),
            output_name: output.name().to_string(),
            session,
            chw,
            classes,
        })
    }

    /// Number of classes per output row.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Runs `n` samples (row-major bytes) and returns `n * classes` probabilities.
    pub fn run(&mut self, data: &[u8], n: usize) -> Result<Vec<f32>, InferError> {
        let [c, h, w] = self.chw;
        let sample = c * h * w;
        if n == 0 || data.len() != n * sample {
            return Err(InferError::BatchSize {
                got: data.len(),
                n,
                sample,
            });
        }
        let shape = [n as i64, c as i64, h as i64, w as i64];
        let tensor = TensorRef::from_array_view((shape, data))
            .map_err(|e| InferError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| InferError::Run(e.to_string()))?;
        let (oshape, probs) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| InferError::Run(e.to_string()))?;
        if oshape.len() != 2 || oshape[0] != n as i64 || oshape[1] != self.classes as i64 {
            return Err(InferError::Run(format!(
                "output shape {oshape:?}, expected [{n}, {}]",
                self.classes
            )));
        }
        Ok(probs.to_vec())
    }
}

fn check_tensor(
    name: &str,
    ty: &ValueType,
    want_name: &str,
    want_ty: TensorElementType,
    rank: usize,
) -> Result<(), String> {
    if name != want_name {
        return Err(format!("tensor is named {name:?}, expected {want_name:?}"));
    }
    match ty {
        ValueType::Tensor { ty, shape, .. } if *ty == want_ty && shape.len() == rank => Ok(()),
        other => Err(format!(
            "{name:?} is {other:?}, expected a rank-{rank} {want_ty:?} tensor"
        )),
    }
}
