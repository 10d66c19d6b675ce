// ptychopy's HDF5 viewer: h5web's App over our h5grove endpoints (webapp/scans/h5grove_views.py).
// The page (frontend/templates/files/view.html) names the endpoint and the file in data attributes.
import React from "react";
import { createRoot } from "react-dom/client";
import { App, H5GroveProvider, createBasicFetcher } from "@h5web/app";
import "@h5web/app/styles.css";

const root = document.getElementById("h5web-root");
const fetcher = createBasicFetcher({ credentials: "same-origin" });
const api = new URL(root.dataset.api, window.location.href).href;  // absolute: h5web builds export URLs from it
createRoot(root).render(
  <H5GroveProvider url={api} filepath={root.dataset.file} fetcher={fetcher}>
    <App initialPath={root.dataset.initialPath || "/"} disableDarkMode />
  </H5GroveProvider>,
);
