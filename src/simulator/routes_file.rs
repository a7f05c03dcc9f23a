//! Routes from a file, for a simulator that drives somewhere else than the embedded routes (as
//! the Esri sample moves features along the polylines of an input featureSet): an Esri JSON
//! featureSet of polylines (WGS84 or Web Mercator) or GeoJSON LineStrings and MultiLineStrings
//! (a FeatureCollection, a Feature or a bare geometry). Each path is one route, named by the
//! feature's `name` (or `NAME`, `route`) attribute when it has one.

use std::path::Path;

use serde_json::Value;

use crate::geometry::{Route, Wkid};

/// Named routes in WGS84.
pub type NamedRoutes = Vec<(String, Vec<[f64; 2]>)>;

/// Reads a routes file; the error names the problem (the caller names the file).
pub fn load_routes(path: &Path) -> Result<NamedRoutes, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read routes file {}: {err}", path.display()))?;
    parse_routes(&text).map_err(|reason| format!("routes file {}: {reason}", path.display()))
}

/// Parses routes from text.
pub fn parse_routes(text: &str) -> Result<NamedRoutes, String> {
    let document: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let mut routes = Vec::new();
    let default_reference = document.get("spatialReference");
    let features: Vec<&Value> = match document.get("features") {
        Some(Value::Array(features)) => features.iter().collect(),
        Some(_) => return Err("\"features\" is not an array".into()),
        None => vec![&document],
    };
    for (index, feature) in features.into_iter().enumerate() {
        let properties = feature
            .get("attributes")
            .or_else(|| feature.get("properties"));
        let name = ["name", "NAME", "route", "ROUTE"]
            .iter()
            .find_map(|key| properties?.get(*key)?.as_str())
            .map(str::to_owned);
        let geometry = match feature.get("geometry") {
            Some(geometry) => geometry,
            None if feature.get("type").is_some() || feature.get("paths").is_some() => feature,
            None => return Err(format!("feature {index} has no geometry")),
        };
        let paths = paths(geometry, default_reference)
            .map_err(|reason| format!("feature {index}: {reason}"))?;
        for (part, path) in paths.into_iter().enumerate() {
            if Route::new(path.clone()).is_none() {
                return Err(format!(
                    "feature {index}: path {part} needs two distinct vertices"
                ));
            }
            let name = match (&name, part) {
                (Some(name), 0) => name.clone(),
                (Some(name), part) => format!("{name} ({})", part + 1),
                (None, _) => format!("route {}", routes.len() + 1),
            };
            routes.push((name, path));
        }
    }
    if routes.is_empty() {
        return Err("it holds no polylines".into());
    }
    Ok(routes)
}

fn paths(
    geometry: &Value,
    default_reference: Option<&Value>,
) -> Result<Vec<Vec<[f64; 2]>>, String> {
    if let Some(paths) = geometry.get("paths") {
        let reference = geometry.get("spatialReference").or(default_reference);
        let wkid = match reference {
            None => Wkid::Wgs84,
            Some(reference) => {
                let number = reference
                    .get("latestWkid")
                    .or_else(|| reference.get("wkid"))
                    .and_then(Value::as_i64)
                    .ok_or("the spatial reference has no wkid")?;
                Wkid::from_number(number).map_err(|err| err.to_string())?
            }
        };
        let paths = lines(paths).ok_or("paths are not lists of [x, y] vertices")?;
        let paths: Vec<Vec<[f64; 2]>> = paths
            .into_iter()
            .map(|path| {
                path.into_iter()
                    .map(|[x, y]| {
                        let (x, y) = wkid.project(Wkid::Wgs84, x, y);
                        [x, y]
                    })
                    .collect()
            })
            .collect();
        if paths.iter().flatten().any(|vertex| !in_world(*vertex)) {
            return Err(
                "paths have vertices outside the world (longitude -180..180, latitude -90..90)"
                    .into(),
            );
        }
        return Ok(paths);
    }
    let coordinates = geometry.get("coordinates");
    match (geometry.get("type").and_then(Value::as_str), coordinates) {
        (Some("LineString"), Some(line)) => Ok(vec![
            vertices(line)
                .filter(|line| line.iter().all(|vertex| in_world(*vertex)))
                .ok_or("LineString coordinates are not WGS84 [x, y] positions")?,
        ]),
        (Some("MultiLineString"), Some(lines_value)) => lines(lines_value)
            .filter(|lines| lines.iter().flatten().all(|vertex| in_world(*vertex)))
            .ok_or_else(|| "MultiLineString coordinates are not WGS84 lines".into()),
        (Some(other), _) => Err(format!(
            "a {other} is not a route (LineString, MultiLineString or Esri paths)"
        )),
        (None, _) => Err("the geometry has neither paths nor a GeoJSON type".into()),
    }
}

fn in_world([x, y]: [f64; 2]) -> bool {
    (-180.0..=180.0).contains(&x) && (-90.0..=90.0).contains(&y)
}

fn lines(value: &Value) -> Option<Vec<Vec<[f64; 2]>>> {
    value.as_array()?.iter().map(vertices).collect()
}

fn vertices(value: &Value) -> Option<Vec<[f64; 2]>> {
    value
        .as_array()?
        .iter()
        .map(|vertex| {
            let vertex = vertex.as_array()?;
            let x = vertex.first()?.as_f64()?;
            let y = vertex.get(1)?.as_f64()?;
            (x.is_finite() && y.is_finite()).then_some([x, y])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esri_and_geojson_routes_are_read_and_bad_ones_named() {
        let esri = r#"{"spatialReference":{"wkid":102100},"features":[{"attributes":{"name":"A"},"geometry":{"paths":[[[0,0],[111319.49,0]]]}}]}"#;
        let routes = parse_routes(esri).unwrap();
        assert_eq!(routes[0].0, "A");
        assert!((routes[0].1[1][0] - 1.0).abs() < 1e-6);
        let geojson = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":"MultiLineString","coordinates":[[[1,1],[2,2]],[[3,3],[4,4]]]}}]}"#;
        assert_eq!(parse_routes(geojson).unwrap().len(), 2);
        let bare = r#"{"type":"LineString","coordinates":[[1,1],[2,2]]}"#;
        assert_eq!(parse_routes(bare).unwrap()[0].0, "route 1");
        for (bad, says) in [
            ("nope", "not JSON"),
            (r#"{"features":[]}"#, "no polylines"),
            (
                r#"{"type":"Point","coordinates":[1,2]}"#,
                "Point is not a route",
            ),
            (
                r#"{"type":"LineString","coordinates":[[1,1],[1,1]]}"#,
                "two distinct",
            ),
            (
                r#"{"paths":[[[0,0],[1,1]]],"spatialReference":{"wkid":2193}}"#,
                "2193",
            ),
            (
                r#"{"type":"LineString","coordinates":[[1,1],[500,2]]}"#,
                "positions",
            ),
        ] {
            let error = parse_routes(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
