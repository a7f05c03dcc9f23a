//! `Route`: a polyline in WGS84 with cumulative lengths in metres, for moving simulated
//! features along it. Distances use an equirectangular approximation, accurate to well under
//! a percent over city-sized routes.

/// Metres per degree of latitude on a sphere of the WGS84 mean radius.
const METRES_PER_DEGREE: f64 = 111_195.0;

/// A polyline of at least two distinct vertices, with cumulative lengths.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    vertices: Vec<[f64; 2]>,
    cumulative_m: Vec<f64>,
}

impl Route {
    /// Builds a route from lon/lat vertices; `None` if it has no length.
    ///
    /// ```
    /// use featurestream::geometry::Route;
    /// let route = Route::new(vec![[0.0, 0.0], [0.0, 1.0]]).unwrap();
    /// let (x, y, heading) = route.position_at(route.length_m() / 2.0);
    /// assert!(x.abs() < 1e-9 && (y - 0.5).abs() < 1e-9 && heading.abs() < 1e-9);
    /// ```
    pub fn new(vertices: Vec<[f64; 2]>) -> Option<Route> {
        if vertices.len() < 2 || vertices.iter().flatten().any(|value| !value.is_finite()) {
            return None;
        }
        let mut cumulative_m = Vec::with_capacity(vertices.len());
        let mut total = 0.0;
        cumulative_m.push(0.0);
        for pair in vertices.windows(2) {
            total += segment_length_m(pair[0], pair[1]);
            cumulative_m.push(total);
        }
        (total > 0.0).then_some(Route {
            vertices,
            cumulative_m,
        })
    }

    /// Total length in metres.
    pub fn length_m(&self) -> f64 {
        *self
            .cumulative_m
            .last()
            .expect("a route has at least two vertices")
    }

    /// The vertices, lon/lat.
    pub fn vertices(&self) -> &[[f64; 2]] {
        &self.vertices
    }

    /// Position and heading (degrees clockwise from north) after `distance_m` along the
    /// route, wrapping around at the end so that vehicles loop.
    pub fn position_at(&self, distance_m: f64) -> (f64, f64, f64) {
        let distance = distance_m.rem_euclid(self.length_m());
        let segment = match self
            .cumulative_m
            .binary_search_by(|probe| probe.total_cmp(&distance))
        {
            Ok(index) => index.min(self.vertices.len() - 2),
            Err(index) => index.saturating_sub(1).min(self.vertices.len() - 2),
        };
        let (start, end) = (self.vertices[segment], self.vertices[segment + 1]);
        let length = self.cumulative_m[segment + 1] - self.cumulative_m[segment];
        let fraction = if length > 0.0 {
            (distance - self.cumulative_m[segment]) / length
        } else {
            0.0
        };
        let x = start[0] + (end[0] - start[0]) * fraction;
        let y = start[1] + (end[1] - start[1]) * fraction;
        let east = (end[0] - start[0]) * start[1].to_radians().cos();
        let north = end[1] - start[1];
        let heading = east.atan2(north).to_degrees().rem_euclid(360.0);
        (x, y, heading)
    }
}

fn segment_length_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let mean_latitude = ((a[1] + b[1]) / 2.0).to_radians();
    let east = (b[0] - a[0]) * mean_latitude.cos();
    let north = b[1] - a[1];
    (east * east + north * north).sqrt() * METRES_PER_DEGREE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_wraps_and_heading_follows_segment() {
        let route = Route::new(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]).unwrap();
        let (x, y, heading) = route.position_at(route.length_m() * 0.25);
        assert!((x - 0.5).abs() < 1e-9 && y.abs() < 1e-9);
        assert!((heading - 90.0).abs() < 1e-9, "east");
        let (x, y, _) = route.position_at(route.length_m() * 1.25);
        assert!((x - 0.5).abs() < 1e-9 && y.abs() < 1e-9, "wraps");
        assert!(Route::new(vec![[1.0, 1.0], [1.0, 1.0]]).is_none());
    }
}
