// A live layer in MapLibre GL JS from featurestream's GeoJSON stream
// (/api/services/{name}/geojson, docs/geojson.md). The page passes the maplibregl it loaded;
// the browser tests pass the npm package's. Returns { map, setWhere, count, close }.
//
// The stream sends, in order: the latest state as a FeatureCollection, then a
// FeatureCollection per batch (each feature's id is its track id: a newer one replaces the
// older), {"type":"delete","trackIds":[...]} when tracks expire, and {"filter":..,"error":..}
// answering each filter message. After a reply without error, the new filter's state follows:
// the features held so far are dropped first.
window.startMapLibreExample = function startMapLibreExample(maplibregl, options) {
  const origin = options.origin || location.origin;
  const service = options.service || "vehicles";
  const tracks = new Map();
  let pending = false;
  let onReply = options.onReply || (() => {});
  const map = new maplibregl.Map({
    container: options.container,
    style: options.style || { version: 8, sources: {}, layers: [{ id: "background", type: "background", paint: { "background-color": "#eef2f5" } }] },
    center: [-117.19, 34.06],
    zoom: 11,
  });

  function render() {
    pending = false;
    const source = map.getSource("tracks");
    if (source) source.setData({ type: "FeatureCollection", features: Array.from(tracks.values()) });
  }
  // One setData per frame, however many messages came.
  function changed() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(render);
    }
  }

  const query = new URLSearchParams();
  if (options.where) query.set("where", options.where);
  const url = origin.replace(/^http/, "ws") + "/api/services/" + encodeURIComponent(service) + "/geojson?" + query;
  const socket = new WebSocket(url);
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "FeatureCollection") {
      for (const feature of message.features) tracks.set(feature.id, feature);
      changed();
    } else if (message.type === "delete") {
      for (const id of message.trackIds) tracks.delete(id);
      changed();
    } else if ("filter" in message) {
      if (!message.error) {
        tracks.clear();
        changed();
      }
      onReply(message);
    }
  };

  map.on("load", () => {
    map.addSource("tracks", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
    map.addLayer({
      id: "tracks",
      type: "circle",
      source: "tracks",
      paint: {
        "circle-radius": 5,
        "circle-color": ["interpolate", ["linear"], ["coalesce", ["get", "speed"], 0], 0, "#2c7bb6", 120, "#d7191c"],
        "circle-stroke-color": "#fff",
        "circle-stroke-width": 1,
      },
    });
    render();
  });

  return {
    map,
    socket,
    // Sends a new where clause; the reply comes to options.onReply.
    setWhere(where) {
      socket.send(JSON.stringify({ filter: { where } }));
    },
    // The features held now.
    features: () => Array.from(tracks.values()),
    close() {
      socket.close();
      map.remove();
    },
  };
};
