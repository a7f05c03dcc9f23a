// The example's logic, separate from how the SDK is loaded: the page passes the classes it
// loaded from Esri's CDN; the browser tests pass the same classes from the bundled SDK.
// Returns { layer, view } so that callers can watch the layer.
window.startStreamLayerExample = function startStreamLayerExample(sdk, options) {
  const { Map, MapView, StreamLayer } = sdk;
  const origin = options.origin || location.origin;
  const service = options.service || "vehicles";
  let layer;
  if (options.mode === "custom") {
    // Custom mode: the Esri custom stream service handshake; the schema is given here.
    layer = new StreamLayer({
      webSocketUrl: origin.replace(/^http/, "ws") + "/arcgis/ws/services/" + service + "/custom",
      objectIdField: "OBJECTID",
      geometryType: "point",
      spatialReference: { wkid: 4326 },
      timeInfo: { trackIdField: "TRACKID" },
      fields: [
        { name: "OBJECTID", type: "oid" },
        { name: "TRACKID", type: "integer" },
        { name: "name", type: "string" },
        { name: "route", type: "string" },
        { name: "status", type: "string" },
        { name: "speed", type: "double" },
        { name: "heading", type: "double" },
        { name: "active", type: "small-integer" },
        { name: "observed", type: "date" },
      ],
      definitionExpression: options.where || null,
      renderer: renderer(),
    });
  } else {
    // Server mode: the SDK reads the metadata and subscribes.
    layer = new StreamLayer({
      url: origin + "/arcgis/rest/services/" + service + "/StreamServer",
      definitionExpression: options.where || null,
      renderer: renderer(),
    });
  }
  const map = new Map({ basemap: options.basemap || undefined, layers: [layer] });
  const view = new MapView({ container: options.container, map, center: [-117.19, 34.06], zoom: 12 });
  return { layer, view };

  function renderer() {
    return {
      type: "simple",
      symbol: { type: "simple-marker", size: 7, color: [0, 112, 255], outline: { color: [255, 255, 255], width: 1 } },
      visualVariables: [{ type: "color", field: "speed", stops: [{ value: 0, color: "#2c7bb6" }, { value: 120, color: "#d7191c" }] }],
    };
  }
};
