// Test app, bundled once per SDK major (the import prefix "sdk" is aliased to @arcgis/core 5.x
// or to arcgis-core-4). The runner drives it through window.fs from Playwright.
import esriConfig from "sdk/config.js";
import EsriMap from "sdk/Map.js";
import MapView from "sdk/views/MapView.js";
import StreamLayer from "sdk/layers/StreamLayer.js";
import Extent from "sdk/geometry/Extent.js";

esriConfig.assetsPath = window.ASSETS_PATH;

const R = 6378137;
const toMercator = (lon, lat) => [R * lon * Math.PI / 180, R * Math.log(Math.tan(Math.PI / 4 + lat * Math.PI / 360))];
const AREA = { xmin: -117.32, ymin: 34.02, xmax: -117.06, ymax: 34.13 };

const FIELDS = [
  { name: "OBJECTID", type: "oid" },
  { name: "TRACKID", type: "integer" },
  { name: "name", type: "string" },
  { name: "route", type: "string" },
  { name: "status", type: "string" },
  { name: "speed", type: "double" },
  { name: "heading", type: "double" },
  { name: "active", type: "small-integer" },
  { name: "observed", type: "date" },
];

const state = { views: [] };

function extentIn(wkid) {
  if (wkid === 4326) return new Extent({ ...AREA, spatialReference: { wkid: 4326 } });
  const [xmin, ymin] = toMercator(AREA.xmin, AREA.ymin);
  const [xmax, ymax] = toMercator(AREA.xmax, AREA.ymax);
  return new Extent({ xmin, ymin, xmax, ymax, spatialReference: { wkid } });
}

window.fs = {
  // Adds a token to every request for the server's REST endpoints, the way an application
  // gives the SDK credentials for the archive query (it does not put the layer's token there).
  addTokenInterceptor({ origin, token }) {
    esriConfig.request.interceptors.push({
      urls: `${origin}/arcgis/rest/services`,
      before(params) {
        params.requestOptions.query = { ...(params.requestOptions.query || {}), token };
      },
    });
  },
  // Creates a layer (server or custom mode) in a new MapView of the given wkid.
  async open({ mode, origin, service = "vehicles", wkid = 3857, definitionExpression, geometryDefinition, url, customParameters }) {
    const container = document.createElement("div");
    container.style.cssText = "width:400px;height:300px;display:inline-block";
    document.body.appendChild(container);
    const options = {};
    if (customParameters) options.customParameters = customParameters;
    if (definitionExpression) options.definitionExpression = definitionExpression;
    if (geometryDefinition) options.geometryDefinition = new Extent({ ...geometryDefinition, spatialReference: { wkid: 4326 } });
    let layer;
    if (mode === "server") {
      layer = new StreamLayer({ url: url || `${origin}/arcgis/rest/services/${service}/StreamServer`, ...options });
    } else {
      const wsOrigin = origin.replace(/^http/, "ws");
      layer = new StreamLayer({
        webSocketUrl: url || `${wsOrigin}/arcgis/ws/services/${service}/custom`,
        objectIdField: "OBJECTID",
        geometryType: "point",
        spatialReference: { wkid: 4326 },
        timeInfo: { trackIdField: "TRACKID" },
        fields: FIELDS,
        ...options,
      });
    }
    const map = new EsriMap({ layers: [layer] });
    const view = new MapView({ container, map, spatialReference: { wkid }, extent: extentIn(wkid) });
    const entry = { layer, view, received: [], messages: [], loadError: null, layerView: null };
    state.views.push(entry);
    const id = state.views.length - 1;
    try {
      await layer.load();
      entry.layerView = await view.whenLayerView(layer);
      entry.layerView.on("data-received", (feature) => {
        // Features received before the socket is connected come from the archive
        // (keepLatestArchive): the SDK queries it first and opens the socket after.
        const live = entry.layerView.connectionStatus === "connected";
        entry.received.push({ live, attributes: { ...feature.attributes }, geometry: feature.geometry ? { x: feature.geometry.x, y: feature.geometry.y } : null });
      });
      entry.layerView.on("message-received", (message) => entry.messages.push(JSON.parse(JSON.stringify(message))));
    } catch (error) {
      entry.loadError = String(error && error.message || error);
    }
    return id;
  },
  loadError(id) { return state.views[id].loadError; },
  async drawn(id) {
    const entry = state.views[id];
    return entry.layerView ? await entry.layerView.queryFeatureCount() : 0;
  },
  received(id, from = 0) { return state.views[id].received.slice(from); },
  receivedCount(id) { return state.views[id].received.length; },
  messages(id) { return state.views[id].messages; },
  status(id) { const lv = state.views[id].layerView; return lv ? lv.connectionStatus : "none"; },
  connectionError(id) {
    const lv = state.views[id].layerView;
    return lv && lv.connectionError ? String(lv.connectionError.message) : null;
  },
  setDefinitionExpression(id, expression) { state.views[id].layer.definitionExpression = expression; },
  send(id, message) { state.views[id].layer.sendMessageToSocket(message); },
  close(id) {
    const entry = state.views[id];
    entry.view.container.remove();
    entry.view.destroy();
    entry.layer.destroy();
  },
};
window.sdk = { Map: EsriMap, MapView, StreamLayer };
window.fsReady = true;
