//! Image input for `/v1/classify`: decodes a PNG or JPEG file and converts it to the family's input spec
//! (grayscale or planar RGB by the channel count, resized to H x W, one uint8 per value), the same bytes the data
//! set stores.

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
    #[error(
        "this family takes {0}-channel input; /v1/classify supports 1-channel (grayscale) and 3-channel (RGB) families"
    )]
    Channels(usize),
    #[error("image is larger than {max}x{max} pixels or too large to decode")]
    TooLarge { max: u32 },
}

/// Largest accepted side, to bound decode memory.
const MAX_SIDE: u32 = 8192;

/// Decodes `bytes` (PNG or JPEG, detected from the content) to `c*h*w` bytes for the model.
pub fn image_to_sample(bytes: &[u8], chw: [usize; 3]) -> Result<Vec<u8>, ImageError> {
    let [c, h, w] = chw;
    if c != 1 && c != 3 {
        return Err(ImageError::Channels(c));
    }
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => image::ImageFormat::Png,
        Ok(image::ImageFormat::Jpeg) => image::ImageFormat::Jpeg,
        _ => return Err(ImageError::UnknownFormat),
    };
    let name = if format == image::ImageFormat::Png {
        "PNG"
    } else {
        "JPEG"
    };
    let decode = |e: image::ImageError| ImageError::Decode {
        format: name,
        message: e.to_string(),
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageError::TooLarge { max: MAX_SIDE },
        other => decode(other),
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
    Ok(fit(img.to_luma8(), w, h).into_raw())
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
            Err(ImageError::Decode { .. })
        ));
        assert!(matches!(
            image_to_sample(&p, [2, 28, 28]),
            Err(ImageError::Channels(2))
        ));
    }
}
