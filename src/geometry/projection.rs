//! Spatial references this server supports and closed-form projection between them:
//! WGS84 (4326) and Web Mercator (3857, with its aliases 102100, 102113, 900913).
//! No I/O, no allocation.

use std::f64::consts::PI;
use std::fmt;

/// Earth radius of the spherical Web Mercator projection, metres.
const EARTH_RADIUS_M: f64 = 6_378_137.0;
/// Web Mercator's latitude limit, degrees: the square world.
pub const MAX_MERCATOR_LATITUDE: f64 = 85.051_128_779_806_59;

/// The supported well-known ids, listed in error messages.
pub const SUPPORTED_WKIDS: &str = "4326, 3857, 102100, 102113, 900913";

/// A supported spatial reference. Web Mercator remembers the number the client used, because
/// the ArcGIS SDK checks that the custom-mode handshake echoes it exactly (docs/protocol.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wkid {
    /// WGS84 longitude/latitude, degrees.
    Wgs84,
    /// Spherical Web Mercator, metres; the payload is the wkid as written (3857, 102100, ...).
    WebMercator(u32),
}

/// A wkid this server cannot project to or from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Unsupported spatial reference wkid {0}; supported wkids: {SUPPORTED_WKIDS}.")]
pub struct UnsupportedWkid(pub i64);

impl Wkid {
    /// The wkid as the client wrote it.
    pub fn number(self) -> u32 {
        match self {
            Wkid::Wgs84 => 4326,
            Wkid::WebMercator(number) => number,
        }
    }

    /// Resolves a wkid number.
    ///
    /// ```
    /// use featurestream::geometry::Wkid;
    /// assert_eq!(Wkid::from_number(102100), Ok(Wkid::WebMercator(102100)));
    /// assert!(Wkid::from_number(2193).is_err());
    /// ```
    pub fn from_number(number: i64) -> Result<Wkid, UnsupportedWkid> {
        match number {
            4326 => Ok(Wkid::Wgs84),
            3857 | 102100 | 102113 | 900913 => Ok(Wkid::WebMercator(number as u32)),
            other => Err(UnsupportedWkid(other)),
        }
    }

    /// Whether two references use the same coordinates (102100 and 3857 do).
    pub fn same_projection(self, other: Wkid) -> bool {
        matches!(
            (self, other),
            (Wkid::Wgs84, Wkid::Wgs84) | (Wkid::WebMercator(_), Wkid::WebMercator(_))
        )
    }

    /// Projects one coordinate pair from `self` to `to`.
    ///
    /// ```
    /// use featurestream::geometry::Wkid;
    /// let (x, y) = Wkid::Wgs84.project(Wkid::WebMercator(3857), 180.0, 0.0);
    /// assert!((x - 20_037_508.342789244).abs() < 1e-6 && y.abs() < 1e-9);
    /// ```
    pub fn project(self, to: Wkid, x: f64, y: f64) -> (f64, f64) {
        match (self, to) {
            (Wkid::Wgs84, Wkid::WebMercator(_)) => lon_lat_to_mercator(x, y),
            (Wkid::WebMercator(_), Wkid::Wgs84) => mercator_to_lon_lat(x, y),
            _ => (x, y),
        }
    }
}

impl fmt::Display for Wkid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.number())
    }
}

/// WGS84 degrees to Web Mercator metres; latitude clamped to ±85.0511287798°.
pub fn lon_lat_to_mercator(lon: f64, lat: f64) -> (f64, f64) {
    let lat = lat.clamp(-MAX_MERCATOR_LATITUDE, MAX_MERCATOR_LATITUDE);
    let x = EARTH_RADIUS_M * lon.to_radians();
    let y = EARTH_RADIUS_M * (PI / 4.0 + lat.to_radians() / 2.0).tan().ln();
    (x, y)
}

/// Web Mercator metres to WGS84 degrees.
pub fn mercator_to_lon_lat(x: f64, y: f64) -> (f64, f64) {
    let lon = (x / EARTH_RADIUS_M).to_degrees();
    let lat = (2.0 * (y / EARTH_RADIUS_M).exp().atan() - PI / 2.0).to_degrees();
    (lon, lat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(left: (f64, f64), right: (f64, f64), tolerance: f64) -> bool {
        (left.0 - right.0).abs() < tolerance && (left.1 - right.1).abs() < tolerance
    }

    #[test]
    fn reference_points_project_both_ways() {
        // Reference values from EPSG:3857 (spherical Mercator) tables.
        let cases = [
            ((0.0, 0.0), (0.0, 0.0)),
            ((-117.1956, 34.0564), (-13_046_154.515, 4_036_377.685)),
            (
                (180.0, MAX_MERCATOR_LATITUDE),
                (20_037_508.342_789_244, 20_037_508.342_789_244),
            ),
            (
                (-180.0, -MAX_MERCATOR_LATITUDE),
                (-20_037_508.342_789_244, -20_037_508.342_789_244),
            ),
        ];
        for (lon_lat, metres) in cases {
            let projected = lon_lat_to_mercator(lon_lat.0, lon_lat.1);
            assert!(
                close(projected, metres, 0.01),
                "{lon_lat:?} -> {projected:?}"
            );
            let back = mercator_to_lon_lat(projected.0, projected.1);
            assert!(close(back, lon_lat, 1e-9), "{projected:?} -> {back:?}");
        }
    }

    #[test]
    fn latitude_beyond_mercator_limit_is_clamped() {
        assert_eq!(
            lon_lat_to_mercator(10.0, 89.9),
            lon_lat_to_mercator(10.0, MAX_MERCATOR_LATITUDE)
        );
        assert_eq!(
            lon_lat_to_mercator(10.0, -90.0),
            lon_lat_to_mercator(10.0, -MAX_MERCATOR_LATITUDE)
        );
    }

    #[test]
    fn every_web_mercator_alias_is_accepted_and_remembered() {
        for number in [3857, 102100, 102113, 900913] {
            let wkid = Wkid::from_number(number).expect("alias");
            assert_eq!(wkid.number() as i64, number);
            assert!(wkid.same_projection(Wkid::WebMercator(3857)));
        }
        assert_eq!(
            Wkid::from_number(2193).unwrap_err().to_string(),
            "Unsupported spatial reference wkid 2193; supported wkids: 4326, 3857, 102100, 102113, 900913."
        );
    }
}
