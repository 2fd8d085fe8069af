//! Image input for `/v1/classify`: decodes a PNG or JPEG file and converts it to the family's input spec
//! (grayscale or planar RGB by the channel count, resized to H x W, one uint8 per value), the same bytes the data
//! set stores. Decoding is done in
//! two steps so memory stays bounded: [`inspect`] reads only the header and says how much memory decoding will
//! take (the caller reserves it from the server's budget, or refuses), then [`image_to_sample`] decodes with
//! exactly that allowance. Truncated files are refused rather than classified from a half-grey picture.

use image::ImageDecoder;
use thiserror::Error;

/// Why an uploaded file could not be used.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("the body is empty; send a PNG or JPEG file as the request body")]
    Empty,
    #[error("the body is not a PNG or JPEG image")]
    UnknownFormat,
    #[error("the {format} image could not be decoded: {message}")]
    Decode {
        format: &'static str,
        message: String,
    },
    #[error("the {0} file is truncated (it does not end with the format's end marker)")]
    Truncated(&'static str),
    #[error(
        "this family takes {0}-channel input; /v1/classify supports 1-channel (grayscale) and 3-channel (RGB) families"
    )]
    Channels(usize),
    #[error("image is larger than {max}x{max} pixels")]
    TooLarge { max: u32 },
}

/// Largest accepted side (a further bound beside the memory budget).
pub const MAX_SIDE: u32 = 8192;

/// What the header of an image says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    /// Memory decoding and converting it takes at most, in bytes.
    pub decode_bytes: u64,
}

fn format_of(bytes: &[u8]) -> Result<(image::ImageFormat, &'static str), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => Ok((image::ImageFormat::Png, "PNG")),
        Ok(image::ImageFormat::Jpeg) => Ok((image::ImageFormat::Jpeg, "JPEG")),
        _ => Err(ImageError::UnknownFormat),
    }
}

/// The last chunk of every complete PNG: length 0, type IEND, its CRC.
const PNG_END: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
/// JPEG end-of-image marker.
const JPEG_END: [u8; 2] = [0xFF, 0xD9];

fn complete(bytes: &[u8], format: image::ImageFormat) -> bool {
    match format {
        image::ImageFormat::Png => bytes.ends_with(&PNG_END),
        _ => bytes.ends_with(&JPEG_END),
    }
}

fn reader(
    bytes: &[u8],
    format: image::ImageFormat,
    max_alloc: u64,
) -> image::ImageReader<std::io::Cursor<&[u8]>> {
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    reader
}

/// Memory allowed while reading a header (metadata chunks).
const HEADER_ALLOC: u64 = 4 << 20;

/// Reads the header of `bytes` without decoding pixels: format, size, and the memory a decode would take (the
/// decoded picture in its own pixel format, the decoder's working copy of the same size, the converted copy at
/// up to 3 bytes per pixel, and 1 MiB for the decoder's buffers).
pub fn inspect(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    let (format, name) = format_of(bytes)?;
    if !complete(bytes, format) {
        return Err(ImageError::Truncated(name));
    }
    let decoder = reader(bytes, format, HEADER_ALLOC)
        .into_decoder()
        .map_err(|e| match e {
            image::ImageError::Limits(_) => ImageError::TooLarge { max: MAX_SIDE },
            other => ImageError::Decode {
                format: name,
                message: other.to_string(),
            },
        })?;
    let (width, height) = decoder.dimensions();
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ImageError::TooLarge { max: MAX_SIDE });
    }
    let pixels = u64::from(width) * u64::from(height);
    let decode_bytes = decoder
        .total_bytes()
        .saturating_mul(2)
        .saturating_add(pixels.saturating_mul(3))
        .saturating_add(1 << 20);
    Ok(ImageHeader {
        format: name,
        width,
        height,
        decode_bytes,
    })
}

/// Decodes `bytes` (PNG or JPEG, detected from the content) to `c*h*w` bytes for the model, allocating at most
/// what [`inspect`] reported.
pub fn image_to_sample(bytes: &[u8], chw: [usize; 3]) -> Result<Vec<u8>, ImageError> {
    let [c, h, w] = chw;
    if c != 1 && c != 3 {
        return Err(ImageError::Channels(c));
    }
    let header = inspect(bytes)?;
    let (format, name) = format_of(bytes)?;
    let img = reader(bytes, format, header.decode_bytes)
        .decode()
        .map_err(|e| match e {
            image::ImageError::Limits(_) => ImageError::TooLarge { max: MAX_SIDE },
            other => ImageError::Decode {
                format: name,
                message: other.to_string(),
            },
        })?;
    if c == 3 {
        // Colour families (manifest input.color: rgb): planar R, G, B, as the toolchain's image-folder loader.
        let rgb = fit(img.to_rgb8(), w, h);
        let plane = w * h;
        let mut out = vec![0u8; 3 * plane];
        for (i, px) in rgb.pixels().enumerate() {
            for ch in 0..3 {
                out[ch * plane + i] = px.0[ch];
            }
        }
        return Ok(out);
    }
    let gray = img.to_luma8();
    drop(img);
    Ok(fit(gray, w, h).into_raw())
}

/// The image at exactly `w` x `h` (bilinear when it must be resized).
fn fit<P: image::Pixel<Subpixel = u8> + 'static>(
    img: image::ImageBuffer<P, Vec<u8>>,
    w: usize,
    h: usize,
) -> image::ImageBuffer<P, Vec<u8>> {
    if img.width() as usize == w && img.height() as usize == h {
        img
    } else {
        image::imageops::resize(
            &img,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, value: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(w, h, image::Luma([value]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode");
        out
    }

    #[test]
    fn png_is_converted_to_the_input_size() {
        let sample = image_to_sample(&png(56, 40, 200), [1, 28, 28]).expect("ok");
        assert_eq!(sample.len(), 784);
        assert!(sample.iter().all(|&v| v == 200));
    }

    #[test]
    fn color_jpeg_becomes_grayscale() {
        let img = image::RgbImage::from_pixel(30, 30, image::Rgb([255, 255, 255]));
        let mut out = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .expect("encode");
        let sample = image_to_sample(&out, [1, 28, 28]).expect("ok");
        assert!(sample.iter().all(|&v| v > 245), "{:?}", &sample[..5]);
    }

    #[test]
    fn header_reports_the_decode_memory_before_decoding() {
        let h = inspect(&png(300, 200, 5)).expect("header");
        assert_eq!((h.format, h.width, h.height), ("PNG", 300, 200));
        assert_eq!(h.decode_bytes, 2 * 60_000 + 3 * 60_000 + (1 << 20));
    }

    #[test]
    fn colour_png_becomes_planar_rgb_for_three_channel_families() {
        let img = image::RgbImage::from_pixel(7, 5, image::Rgb([200, 30, 90]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode");
        let sample = image_to_sample(&out, [3, 4, 4]).expect("ok");
        assert_eq!(sample.len(), 48);
        assert!(sample[..16].iter().all(|&v| v == 200));
        assert!(sample[16..32].iter().all(|&v| v == 30));
        assert!(sample[32..].iter().all(|&v| v == 90));
        // A grayscale file for a colour family: every channel carries the gray value.
        let sample = image_to_sample(&png(4, 4, 77), [3, 4, 4]).expect("ok");
        assert!(sample.iter().all(|&v| v == 77));
    }

    #[test]
    fn bad_files_get_clear_errors() {
        assert!(matches!(
            image_to_sample(b"", [1, 28, 28]),
            Err(ImageError::Empty)
        ));
        assert!(matches!(
            image_to_sample(b"hello world", [1, 28, 28]),
            Err(ImageError::UnknownFormat)
        ));
        let p = png(10, 10, 1);
        let cut = &p[..p.len() / 2];
        assert!(matches!(
            image_to_sample(cut, [1, 28, 28]),
            Err(ImageError::Truncated("PNG"))
        ));
        let img = image::RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9]));
        let mut jpeg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .expect("encode");
        assert!(matches!(
            image_to_sample(&jpeg[..jpeg.len() / 2], [1, 28, 28]),
            Err(ImageError::Truncated("JPEG"))
        ));
        // A complete end marker on a broken body still fails to decode, with the decoder's message.
        let mut bad = p[..40].to_vec();
        bad.extend_from_slice(&PNG_END);
        assert!(matches!(
            image_to_sample(&bad, [1, 28, 28]),
            Err(ImageError::Decode { .. })
        ));
        assert!(matches!(
            image_to_sample(&p, [2, 28, 28]),
            Err(ImageError::Channels(2))
        ));
    }

    mod properties {
        use super::super::*;
        use super::png;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn any_grey_png_becomes_one_sample_of_the_input_size(
                w in 1u32..96, h in 1u32..96, v in any::<u8>(), side in 4usize..40,
            ) {
                let bytes = png(w, h, v);
                let header = inspect(&bytes).expect("header");
                prop_assert_eq!((header.width, header.height), (w, h));
                prop_assert!(header.decode_bytes >= 3 * u64::from(w * h));
                let sample = image_to_sample(&bytes, [1, side, side]).expect("decodes");
                prop_assert_eq!(sample.len(), side * side);
                prop_assert!(sample.iter().all(|&x| x == v));
            }

            #[test]
            fn a_cut_image_is_always_refused(w in 1u32..64, h in 1u32..64, cut in any::<prop::sample::Index>()) {
                let bytes = png(w, h, 3);
                let at = cut.index(bytes.len());
                prop_assert!(image_to_sample(&bytes[..at], [1, 28, 28]).is_err());
            }

            #[test]
            fn arbitrary_bytes_after_a_magic_number_are_an_error_not_a_panic(
                jpeg in any::<bool>(),
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                end in any::<bool>(),
            ) {
                let mut bytes = if jpeg { vec![0xFF, 0xD8, 0xFF] } else { b"\x89PNG\r\n\x1a\n".to_vec() };
                bytes.extend_from_slice(&body);
                if end {
                    bytes.extend_from_slice(if jpeg { &JPEG_END[..] } else { &PNG_END[..] });
                }
                let _ = image_to_sample(&bytes, [1, 28, 28]);
            }
        }
    }
}
