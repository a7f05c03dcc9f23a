//! `Envelope`: an axis-aligned rectangle whose corners are finite and ordered by construction,
//! and the decoding of a client's envelope (in any supported reference) into the connection's.

use std::fmt;

use super::projection::{UnsupportedWkid, Wkid};

/// An axis-aligned rectangle with finite `xmin <= xmax` and `ymin <= ymax`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Envelope {
    xmin: f64,
    ymin: f64,
    xmax: f64,
    ymax: f64,
}

/// Why a client's envelope was refused. Each reads as a sentence for the filter reply.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    /// A coordinate is NaN or infinite.
    #[error("Invalid geometry: {0} must be a finite number.")]
    NotFinite(&'static str),
    /// A minimum is greater than its maximum.
    #[error("Invalid geometry: {min_name} ({min}) is greater than {max_name} ({max}).")]
    Inverted {
        /// `xmin` or `ymin`.
        min_name: &'static str,
        /// Its value.
        min: f64,
        /// `xmax` or `ymax`.
        max_name: &'static str,
        /// Its value.
        max: f64,
    },
    /// The envelope's `spatialReference` is not supported.
    #[error("Invalid geometry: {0}")]
    Wkid(#[from] UnsupportedWkid),
    /// Not an envelope (missing corner, a point, a polygon, text that is not a list).
    #[error("Invalid geometry: {0}")]
    NotAnEnvelope(String),
}

impl Envelope {
    /// The smallest envelope holding both.
    pub fn union(&self, other: &Envelope) -> Envelope {
        Envelope {
            xmin: self.xmin.min(other.xmin),
            ymin: self.ymin.min(other.ymin),
            xmax: self.xmax.max(other.xmax),
            ymax: self.ymax.max(other.ymax),
        }
    }

    /// Builds an envelope, refusing non-finite or inverted corners.
    ///
    /// ```
    /// use featurestream::geometry::Envelope;
    /// let envelope = Envelope::new(-118.0, 33.0, -117.0, 35.0).unwrap();
    /// assert!(envelope.contains_point(-117.5, 34.0));
    /// assert!(Envelope::new(1.0, 0.0, 0.0, 1.0).is_err());
    /// ```
    pub fn new(xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> Result<Envelope, EnvelopeError> {
        for (name, value) in [
            ("xmin", xmin),
            ("ymin", ymin),
            ("xmax", xmax),
            ("ymax", ymax),
        ] {
            if !value.is_finite() {
                return Err(EnvelopeError::NotFinite(name));
            }
        }
        if xmin > xmax {
            return Err(EnvelopeError::Inverted {
                min_name: "xmin",
                min: xmin,
                max_name: "xmax",
                max: xmax,
            });
        }
        if ymin > ymax {
            return Err(EnvelopeError::Inverted {
                min_name: "ymin",
                min: ymin,
                max_name: "ymax",
                max: ymax,
            });
        }
        Ok(Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        })
    }

    /// Parses the URL form `xmin,ymin,xmax,ymax` (ArcGIS subscribe `geometry=`).
    pub fn parse_comma_list(text: &str) -> Result<Envelope, EnvelopeError> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [xmin, ymin, xmax, ymax] = parts.as_slice() else {
            return Err(EnvelopeError::NotAnEnvelope(format!(
                "expected xmin,ymin,xmax,ymax or an envelope JSON object, found \"{}\".",
                truncate(text, 60)
            )));
        };
        let number = |name: &'static str, value: &str| {
            value.parse::<f64>().map_err(|_| {
                EnvelopeError::NotAnEnvelope(format!(
                    "{name} \"{}\" is not a number.",
                    truncate(value, 30)
                ))
            })
        };
        Envelope::new(
            number("xmin", xmin)?,
            number("ymin", ymin)?,
            number("xmax", xmax)?,
            number("ymax", ymax)?,
        )
    }

    /// Smallest x.
    pub fn xmin(&self) -> f64 {
        self.xmin
    }
    /// Smallest y.
    pub fn ymin(&self) -> f64 {
        self.ymin
    }
    /// Largest x.
    pub fn xmax(&self) -> f64 {
        self.xmax
    }
    /// Largest y.
    pub fn ymax(&self) -> f64 {
        self.ymax
    }

    /// Inside or on the boundary.
    pub fn contains_point(&self, x: f64, y: f64) -> bool {
        x >= self.xmin && x <= self.xmax && y >= self.ymin && y <= self.ymax
    }

    /// Whether the two rectangles share at least one point (touching counts).
    pub fn intersects(&self, other: &Envelope) -> bool {
        self.xmin <= other.xmax
            && other.xmin <= self.xmax
            && self.ymin <= other.ymax
            && other.ymin <= self.ymax
    }

    /// Whether `other` lies inside this one (boundary included).
    pub fn contains(&self, other: &Envelope) -> bool {
        other.xmin >= self.xmin
            && other.xmax <= self.xmax
            && other.ymin >= self.ymin
            && other.ymax <= self.ymax
    }

    /// Projects the envelope. Both supported projections are monotonic in each axis, so the
    /// projected corners bound the projected rectangle exactly.
    pub fn project(&self, from: Wkid, to: Wkid) -> Envelope {
        let (xmin, ymin) = from.project(to, self.xmin, self.ymin);
        let (xmax, ymax) = from.project(to, self.xmax, self.ymax);
        Envelope {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:?},{:?},{:?},{:?}",
            self.xmin, self.ymin, self.xmax, self.ymax
        )
    }
}

/// An envelope as a client sent it: corners plus the reference they are in, if stated.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvelopeInput {
    /// The corners as sent (not yet validated).
    pub corners: [f64; 4],
    /// `spatialReference.wkid` (or `latestWkid`); `None` means the connection's reference.
    pub wkid: Option<i64>,
}

impl EnvelopeInput {
    /// Validates the envelope and projects it into the connection's reference `out_sr`.
    pub fn resolve(&self, out_sr: Wkid) -> Result<Envelope, EnvelopeError> {
        let [xmin, ymin, xmax, ymax] = self.corners;
        let envelope = Envelope::new(xmin, ymin, xmax, ymax)?;
        let from = match self.wkid {
            Some(number) => Wkid::from_number(number)?,
            None => out_sr,
        };
        Ok(envelope.project(from, out_sr))
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_list_parses_with_whitespace() {
        let envelope = Envelope::parse_comma_list(" -109.55, 25.76 ,-86.39,49.94").expect("valid");
        assert_eq!((envelope.xmin(), envelope.ymax()), (-109.55, 49.94));
    }

    #[test]
    fn invalid_envelopes_name_the_problem() {
        let cases: [(&str, &str); 5] = [
            (
                "1,2,3",
                "Invalid geometry: expected xmin,ymin,xmax,ymax or an envelope JSON object, found \"1,2,3\".",
            ),
            ("a,2,3,4", "Invalid geometry: xmin \"a\" is not a number."),
            (
                "5,0,1,1",
                "Invalid geometry: xmin (5) is greater than xmax (1).",
            ),
            (
                "0,5,1,1",
                "Invalid geometry: ymin (5) is greater than ymax (1).",
            ),
            (
                "NaN,0,1,1",
                "Invalid geometry: xmin must be a finite number.",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                Envelope::parse_comma_list(text).unwrap_err().to_string(),
                message,
                "{text}"
            );
        }
        assert_eq!(
            Envelope::parse_comma_list("0,0,inf,1").unwrap_err(),
            EnvelopeError::NotFinite("xmax")
        );
    }

    #[test]
    fn envelope_in_4326_is_projected_into_web_mercator_connection() {
        let input = EnvelopeInput {
            corners: [-180.0, -90.0, 180.0, 90.0],
            wkid: Some(4326),
        };
        let envelope = input.resolve(Wkid::WebMercator(102100)).expect("valid");
        assert!((envelope.xmax() - 20_037_508.342_789_244).abs() < 1e-6);
        assert!(
            (envelope.ymax() - 20_037_508.342_789_244).abs() < 1e-6,
            "latitude clamped"
        );
        let same = EnvelopeInput {
            corners: [1.0, 2.0, 3.0, 4.0],
            wkid: Some(3857),
        };
        assert_eq!(
            same.resolve(Wkid::WebMercator(102100)).unwrap(),
            Envelope::new(1.0, 2.0, 3.0, 4.0).unwrap()
        );
    }

    #[test]
    fn unknown_envelope_wkid_lists_supported() {
        let input = EnvelopeInput {
            corners: [0.0, 0.0, 1.0, 1.0],
            wkid: Some(27700),
        };
        assert_eq!(
            input.resolve(Wkid::Wgs84).unwrap_err().to_string(),
            "Invalid geometry: Unsupported spatial reference wkid 27700; supported wkids: 4326, 3857, 102100, 102113, 900913."
        );
    }

    #[test]
    fn touching_rectangles_intersect() {
        let left = Envelope::new(0.0, 0.0, 1.0, 1.0).unwrap();
        let right = Envelope::new(1.0, 1.0, 2.0, 2.0).unwrap();
        let far = Envelope::new(1.5, 1.5, 2.0, 2.0).unwrap();
        assert!(left.intersects(&right));
        assert!(!left.intersects(&far));
        assert!(right.contains(&far) && !far.contains(&right));
    }
}
